"""Handoff from the mixture stage: a data-args blend file -> megatron-core GPTDatasets through
``BlendedMegatronDatasetBuilder``, exactly as Megatron-LM's ``--data-args-path`` would read it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

OBJECT_INDEX = "object_index"  # under the dataset cache: the .idx files of prefixes on object storage


def read_blend(data_args_path: str) -> tuple[list[str], list[float]]:
    """A data-args file (``w1 prefix1 w2 prefix2 ...``, as Megatron-LM's ``--data-args-path``) as
    (prefixes, weights), parsed by megatron-core itself."""
    from megatron.core.datasets.utils import get_blend_from_list

    with open(data_args_path) as f:
        prefixes, weights = get_blend_from_list(f.read().split())
    return prefixes, weights


@dataclass
class DatasetTokenizer:
    """The tokenizer surface GPTDataset uses. pad = -1: Qwen's pad token is its EOD token, and megatron-core
    would otherwise mask every EOD out of the loss."""

    vocab_size: int
    eod: int
    name: str

    @property
    def eos(self) -> int:
        return self.eod

    @property
    def pad(self) -> int:
        return -1

    @property
    def unique_identifiers(self) -> dict:
        return {"class": "DatasetTokenizer", "tokenizer": self.name, "eod": self.eod, "vocab_size": self.vocab_size}


def _dataset_config(blend_per_split: list, seq_length: int, tokenizer: DatasetTokenizer, seed: int, cache_dir: str | None,
                    document_masks: bool = False):
    """``document_masks``: a packed sequence's documents do not see each other (attention reset after every
    end-of-document token) and each one's positions start at 0, as Megatron-LM's ``--reset-attention-mask``
    and ``--reset-position-ids``. megatron-core's dataset is told not to build its dense [1, s, s] mask per
    sample: ``collate`` gives the attention the documents' ids instead (``train_entry/attention.py``)."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        object_storage_cache_path=os.path.join(cache_dir, OBJECT_INDEX) if cache_dir else None,
        random_seed=seed,
        sequence_length=seq_length,
        blend_per_split=blend_per_split,
        tokenizer=tokenizer,
        reset_position_ids=document_masks,
        reset_attention_mask=document_masks,
        eod_mask_loss=False,
        create_attention_mask=False,
        path_to_cache=cache_dir,
        mmap_bin_files=True,
    )


def build_datasets(
    data_args_path: str,
    valid_data_args_path: str | None,
    seq_length: int,
    train_samples: int,
    eval_samples: int,
    tokenizer: DatasetTokenizer,
    seed: int,
    cache_dir: str | None,
    document_masks: bool = False,
):
    """(train, valid) from separate train and held-out blends (``blend_per_split``, like Megatron-LM's
    --train-data-path / --valid-data-path). A held-out set that is a separate prefix cannot come out empty
    for a small source, which a percentage ``split`` can (megatron-core then loops forever)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    valid_blend = read_blend(valid_data_args_path) if valid_data_args_path and eval_samples else None
    config = _dataset_config([read_blend(data_args_path), valid_blend, None], seq_length, tokenizer, seed, cache_dir, document_masks)
    sizes = [train_samples, eval_samples if valid_blend else 0, 0]
    train, valid, _ = BlendedMegatronDatasetBuilder(gpt_dataset_class(), sizes, lambda: True, config).build()
    return train, valid


def build_eval_dataset(prefix: str, seq_length: int, samples: int, tokenizer: DatasetTokenizer, seed: int,
                       cache_dir: str | None, document_masks: bool = False):
    """``samples`` sequences from one held-out prefix (one domain's evaluation set)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    config = _dataset_config([None, ([prefix], None), None], seq_length, tokenizer, seed, cache_dir, document_masks)
    _, valid, _ = BlendedMegatronDatasetBuilder(gpt_dataset_class(), [0, samples, 0], lambda: True, config).build()
    return valid


def gpt_dataset_class():
    from train_entry.store_dataset import StoreReadingGPTDataset

    return StoreReadingGPTDataset


def collate(samples: list[dict], document_eod: int | None = None) -> dict:
    """A micro-batch of samples; with ``document_eod`` (document masks) its ``attention_mask`` holds each
    token's document id ([b, 1, 1, s] int32, from the end-of-document tokens), not a dense mask."""
    import torch

    from train_entry.attention import document_ids

    keys = ("tokens", "labels", "loss_mask", "position_ids")
    batch = {k: torch.from_numpy(np.stack([np.asarray(s[k]) for s in samples])) for k in keys}
    if document_eod is not None:
        b, s = batch["tokens"].shape
        batch["attention_mask"] = document_ids(batch["tokens"], document_eod).view(b, 1, 1, s)
    return batch
